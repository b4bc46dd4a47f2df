//! The guardrail layer of the pipeline, and the stream guard it installs.
//!
//! Input: the prompt's text (every message's text, tool-call arguments and tool results — or,
//! with Converse `guardContent` blocks, only those) is assessed by each guardrail that applies;
//! a block refuses the call in the caller's dialect (Bedrock: an answer with the blocked
//! message and `stopReason: guardrail_intervened`; OpenAI and Anthropic: a 400 whose code is
//! `content_filter`), a mask rewrites the prompt before any model sees it.
//!
//! Output: a whole answer is assessed and masked or replaced. A stream gets a
//! [`StreamGuard`], which the one stream observer runs every event through (the layer does
//! not wrap the stream itself). In synchronous mode the guard holds text in windows and
//! releases a window only after it passed, keeping `stream_overlap_chars` back so a value
//! that crosses a boundary is seen whole; in asynchronous mode it releases at once and stops
//! the stream at the first violation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use modelgate_types::{
    ChatResponse, ContentBlock, ContentBlockDelta, Error, ErrorKind, Message, Role, StopReason,
    StreamEvent, SystemBlock, ToolResultContent, Usage,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::engine::{Assessment, Fired, GuardText, Scope, Verdict};
use super::{Applied, Guardrails, Source, StreamMode, TraceMode};
use crate::context::Dialect;
use crate::outcome::Recorder;
use crate::pipeline::{Answer, Call, Layer, Next};

/// Where a guarded text sits in a request or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A system block.
    System(usize),
    /// A text block: message, block.
    Text(usize, usize),
    /// A tool call's arguments (JSON): message, block.
    ToolInput(usize, usize),
    /// A tool result's text: message, block, item.
    ToolResultText(usize, usize, usize),
    /// A tool result's JSON: message, block, item.
    ToolResultJson(usize, usize, usize),
}

/// What the guardrails did to a call, for its outcome, metrics and access log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardrailReport {
    /// `id:version` of each guardrail applied.
    pub guardrails: Vec<String>,
    /// The strongest action: pass, masked or blocked.
    pub verdict: Verdict,
    /// Which way it acted (when it did).
    pub source: Option<Source>,
    /// What fired (policy, name, action), never content.
    pub fired: Vec<(Source, Fired)>,
    /// Time spent assessing.
    pub latency: Duration,
    /// Synchronous stream guarding: how long the first content was held before release.
    pub stream_hold: Option<Duration>,
}

impl GuardrailReport {
    fn add(&mut self, source: Source, a: &Assessment) {
        if a.verdict > self.verdict {
            self.verdict = a.verdict;
            self.source = Some(source);
        }
        self.fired
            .extend(a.fired.iter().cloned().map(|f| (source, f)));
        self.latency += a.latency;
    }

    /// `pass`, `masked` or `blocked`.
    pub fn action(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Masked => "masked",
            Verdict::Blocked => "blocked",
        }
    }
}

/// The trace returned to the caller (Converse `trace.guardrail`).
#[derive(Debug, Default)]
struct Trace {
    input: serde_json::Map<String, Value>,
    output: serde_json::Map<String, Value>,
    model_output: Vec<String>,
    reason: Option<&'static str>,
}

impl Trace {
    fn json(&self) -> Value {
        let mut t = json!({});
        if !self.model_output.is_empty() {
            t["modelOutput"] = json!(self.model_output);
        }
        if !self.input.is_empty() {
            t["inputAssessment"] = Value::Object(self.input.clone());
        }
        if !self.output.is_empty() {
            t["outputAssessments"] = Value::Object(self.output.clone());
        }
        if let Some(r) = self.reason {
            t["actionReason"] = json!(r);
        }
        t
    }
}

/// Pipeline layer: guardrails on prompts and answers.
pub struct GuardrailLayer {
    guardrails: Arc<Guardrails>,
}

impl GuardrailLayer {
    /// The layer over `guardrails`.
    pub fn new(guardrails: Arc<Guardrails>) -> Self {
        Self { guardrails }
    }
}

/// The texts of messages to guard (a request's, or an answer's one message), with where they
/// are.
fn message_texts(messages: &[Message]) -> Vec<(Location, GuardText)> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for (j, b) in m.content.iter().enumerate() {
            match b {
                ContentBlock::Text(t) => {
                    out.push((Location::Text(i, j), GuardText::plain(t.clone())))
                }
                ContentBlock::ToolUse(u) => out.push((
                    Location::ToolInput(i, j),
                    GuardText::plain(u.input.to_string()),
                )),
                ContentBlock::ToolResult(t) => {
                    for (k, c) in t.content.iter().enumerate() {
                        match c {
                            ToolResultContent::Text(s) => out.push((
                                Location::ToolResultText(i, j, k),
                                GuardText::plain(s.clone()),
                            )),
                            ToolResultContent::Json(v) => out.push((
                                Location::ToolResultJson(i, j, k),
                                GuardText::plain(v.to_string()),
                            )),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Put masked texts back where they came from; false when a masked JSON no longer parses
/// (the caller then blocks rather than pass the unmasked value).
fn write_back(
    system: &mut [SystemBlock],
    messages: &mut [Message],
    loc: Location,
    text: &str,
) -> bool {
    let json = |s: &str| serde_json::from_str::<Value>(s).ok();
    match loc {
        Location::System(i) => {
            if let Some(SystemBlock::Text(t)) = system.get_mut(i) {
                text.clone_into(t);
            }
        }
        Location::Text(i, j) => {
            if let Some(ContentBlock::Text(t)) =
                messages.get_mut(i).and_then(|m| m.content.get_mut(j))
            {
                text.clone_into(t);
            }
        }
        Location::ToolInput(i, j) => {
            let Some(v) = json(text) else { return false };
            if let Some(ContentBlock::ToolUse(u)) =
                messages.get_mut(i).and_then(|m| m.content.get_mut(j))
            {
                u.input = v;
            }
        }
        Location::ToolResultText(i, j, k) | Location::ToolResultJson(i, j, k) => {
            let item = match messages.get_mut(i).and_then(|m| m.content.get_mut(j)) {
                Some(ContentBlock::ToolResult(t)) => t.content.get_mut(k),
                _ => None,
            };
            match item {
                Some(ToolResultContent::Text(t)) => text.clone_into(t),
                Some(ToolResultContent::Json(v)) => {
                    let Some(parsed) = json(text) else {
                        return false;
                    };
                    *v = parsed;
                }
                _ => {}
            }
        }
    }
    true
}

impl GuardrailLayer {
    /// Assess `texts` with every guardrail in turn (each sees the previous one's masking).
    async fn assess_all(
        &self,
        applied: &[Applied],
        texts: &mut [GuardText],
        source: Source,
        report: &mut GuardrailReport,
        trace: &mut Trace,
    ) -> Result<Option<String>, Error> {
        for a in applied {
            let scope = if a.trace == TraceMode::Full {
                Scope::Full
            } else {
                Scope::Interventions
            };
            let assessment = match a.guardrail.assess(texts, source, scope).await {
                Ok(x) => x,
                Err(e) if self.guardrails.config().fail_open => {
                    tracing::warn!(guardrail = %a.guardrail.id, error = %e.message, "a guardrail detector failed; letting the call through (fail_open)");
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.add(source, &assessment);
            if a.trace != TraceMode::Disabled {
                let key = a.guardrail.id.clone();
                match source {
                    Source::Input => {
                        trace.input.insert(key, assessment.with_metrics());
                    }
                    Source::Output => {
                        let list = trace.output.entry(key).or_insert_with(|| json!([]));
                        if let Some(l) = list.as_array_mut() {
                            l.push(assessment.with_metrics());
                        }
                    }
                }
            }
            match assessment.verdict {
                Verdict::Blocked => {
                    trace.reason = Some(assessment.action_reason());
                    let message = assessment
                        .blocked_text
                        .unwrap_or_else(|| a.guardrail.blocked_message(source).to_string());
                    return Ok(Some(message));
                }
                Verdict::Masked => {
                    trace.reason.get_or_insert(assessment.action_reason());
                    for (t, m) in texts.iter_mut().zip(assessment.masked) {
                        t.text = m;
                    }
                }
                Verdict::Pass => {}
            }
        }
        Ok(None)
    }
}

fn blocked_response(model: &str, message: &str) -> ChatResponse {
    ChatResponse {
        model: model.to_string(),
        message: Message {
            role: Role::Assistant,
            content: vec![ContentBlock::Text(message.to_string())],
        },
        stop_reason: StopReason::GuardrailIntervened,
        usage: Usage::new(0, 0),
        latency_ms: 0,
        logprobs: None,
    }
}

#[async_trait]
impl Layer for GuardrailLayer {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let asked = call.ctx.guardrail_request();
        if !call.op.is_answer() || (asked.is_none() && !self.guardrails.any_attached()) {
            return next.run(call).await;
        }
        let applied = self
            .guardrails
            .for_call(&call.ctx, call.op.model(), asked)
            .await?;
        if applied.is_empty() {
            return next.run(call).await;
        }
        let want_trace = applied.iter().any(|a| a.trace != TraceMode::Disabled);
        let mut report = Some(GuardrailReport {
            guardrails: applied
                .iter()
                .map(|a| format!("{}:{}", a.guardrail.id, a.guardrail.version))
                .collect(),
            ..GuardrailReport::default()
        });
        let mut trace = Trace::default();
        let result = self
            .guard(call, next, applied, &mut report, &mut trace, want_trace)
            .await;
        // One report per call, whatever happened — unless a stream guard took it along.
        if let Some(report) = report {
            if want_trace {
                call.ctx.set_guardrail_trace(trace.json());
            }
            call.recorder().outcome().guardrail = Some(report);
        }
        result
    }
}

impl GuardrailLayer {
    /// Guard the prompt, run the rest of the pipeline, guard the answer (a stream: hand the
    /// report and trace to the stream guard, taking them out of `report`).
    async fn guard(
        &self,
        call: &mut Call,
        next: Next<'_>,
        applied: Vec<Applied>,
        report: &mut Option<GuardrailReport>,
        trace: &mut Trace,
        want_trace: bool,
    ) -> Result<Answer, Error> {
        let r = report.get_or_insert_with(GuardrailReport::default);
        // Input.
        let (located, model) = match call.op.chat() {
            Some(req) => (
                applied
                    .iter()
                    .find_map(|a| a.selected.clone())
                    .unwrap_or_else(|| message_texts(&req.messages)),
                req.model.clone(),
            ),
            None => return next.run(call).await,
        };
        let (locs, mut texts): (Vec<Location>, Vec<GuardText>) = located.into_iter().unzip();
        let before: Vec<String> = texts.iter().map(|t| t.text.clone()).collect();
        let refused = |message: String| {
            Error::refusal(ErrorKind::Validation, message).with_code("content_filter")
        };
        if let Some(message) = self
            .assess_all(&applied, &mut texts, Source::Input, r, trace)
            .await?
        {
            return match call.ctx.dialect() {
                Dialect::Bedrock | Dialect::AwsJson | Dialect::Modelgate => Ok(
                    Answer::from_response(blocked_response(&model, &message), &call.op),
                ),
                Dialect::OpenAi | Dialect::Anthropic => Err(refused(message)),
            };
        }
        if let crate::pipeline::Operation::Converse(req)
        | crate::pipeline::Operation::ConverseStream(req) = &mut call.op
        {
            for ((loc, t), b) in locs.iter().zip(&texts).zip(&before) {
                if &t.text != b && !write_back(&mut req.system, &mut req.messages, *loc, &t.text) {
                    // A masked JSON argument that no longer parses: refuse rather than send
                    // the unmasked value.
                    return Err(refused(
                        applied[0]
                            .guardrail
                            .blocked_message(Source::Input)
                            .to_string(),
                    ));
                }
            }
        }
        // Output.
        match next.run(call).await? {
            Answer::Response(mut response) => {
                let (locs, mut texts): (Vec<Location>, Vec<GuardText>) =
                    message_texts(std::slice::from_ref(&response.message))
                        .into_iter()
                        .unzip();
                if trace_full(&applied) {
                    trace.model_output = texts.iter().map(|t| t.text.clone()).collect();
                }
                // The grounding source and query (guardContent qualifiers) go along.
                let n = texts.len();
                texts.extend(
                    applied
                        .iter()
                        .flat_map(|a| a.selected.iter().flatten())
                        .filter(|(_, t)| {
                            !t.qualifiers.is_empty()
                                && !t.qualifiers.contains(&super::Qualifier::GuardContent)
                        })
                        .map(|(_, t)| t.clone()),
                );
                let before: Vec<String> = texts.iter().map(|t| t.text.clone()).collect();
                let blocked = self
                    .assess_all(&applied, &mut texts, Source::Output, r, trace)
                    .await?;
                let masked = texts.iter().zip(&before).any(|(t, b)| t.text != *b);
                if blocked.is_some() || masked {
                    response.stop_reason = StopReason::GuardrailIntervened;
                    // The tokens of text that was replaced must not show through.
                    response.logprobs = None;
                }
                let mut ok = true;
                if blocked.is_none() {
                    let message = std::slice::from_mut(&mut response.message);
                    for ((loc, t), b) in locs.iter().zip(&texts[..n]).zip(&before) {
                        if t.text != *b {
                            ok &= write_back(&mut [], message, *loc, &t.text);
                        }
                    }
                }
                if let Some(message) = blocked.or_else(|| {
                    (!ok).then(|| {
                        applied[0]
                            .guardrail
                            .blocked_message(Source::Output)
                            .to_string()
                    })
                }) {
                    response.message.content = vec![ContentBlock::Text(message)];
                }
                Ok(Answer::Response(response))
            }
            Answer::Stream(stream) => {
                let config = self.guardrails.config();
                call.stream_guard = Some(Box::new(StreamGuard::new(
                    applied,
                    config.stream_window_chars,
                    config.stream_overlap_chars,
                    config.fail_open,
                    report.take().unwrap_or_default(),
                    std::mem::take(trace),
                    want_trace,
                    call.ctx.clone(),
                )));
                Ok(Answer::Stream(stream))
            }
            other => Ok(other),
        }
    }
}

fn trace_full(applied: &[Applied]) -> bool {
    applied.iter().any(|a| a.trace == TraceMode::Full)
}

/// What the observer does with one event, as the stream guard decides.
#[async_trait]
pub trait StreamFilter: Send {
    /// The events to send for `event` (none while held, several when a window is released).
    async fn push(&mut self, event: StreamEvent) -> Result<Vec<StreamEvent>, Error>;
    /// Whether the filter ended the stream: the observer stops reading the model.
    fn stopped(&self) -> bool;
    /// The stream ended: the events still held, and the filter's report for the outcome.
    async fn finish(&mut self, recorder: Option<&mut Recorder>) -> Result<Vec<StreamEvent>, Error>;
    /// The client went away: the report so far, for the cancelled call's outcome.
    fn take_report(&mut self) -> Option<GuardrailReport>;
}

/// A text block being guarded.
#[derive(Default)]
struct Block {
    raw: String,
    /// Bytes of `raw` decided (released, masked or not).
    released: usize,
    /// Bytes of `raw` assessed (asynchronous mode).
    assessed: usize,
}

/// Guards a stream's output (see the module docs).
pub struct StreamGuard {
    applied: Vec<Applied>,
    mode: StreamMode,
    window: usize,
    overlap: usize,
    fail_open: bool,
    report: GuardrailReport,
    trace: Trace,
    want_trace: bool,
    ctx: crate::context::CallContext,
    /// Text blocks by index.
    text: std::collections::HashMap<u32, Block>,
    /// Held non-text blocks (tool calls, reasoning) by index: their events until the stop.
    held: std::collections::HashMap<u32, Vec<StreamEvent>>,
    stopped: bool,
    blocked_message: Option<String>,
    input_tokens: u32,
    deltas: u32,
    first_raw: Option<Instant>,
    first_sent: Option<Instant>,
    started: Instant,
}

impl StreamGuard {
    /// A guard outside any call (tests, benchmarks): `applied` guardrails, windows of
    /// `window` characters with `overlap` held back, failing closed.
    pub fn standalone(applied: Vec<Applied>, window: usize, overlap: usize) -> Self {
        let want_trace = applied.iter().any(|a| a.trace != TraceMode::Disabled);
        Self::new(
            applied,
            window,
            overlap,
            false,
            GuardrailReport::default(),
            Trace::default(),
            want_trace,
            crate::context::CallContext::internal(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        applied: Vec<Applied>,
        window: usize,
        overlap: usize,
        fail_open: bool,
        report: GuardrailReport,
        trace: Trace,
        want_trace: bool,
        ctx: crate::context::CallContext,
    ) -> Self {
        let mode = if applied.iter().all(|a| a.stream_mode == StreamMode::Async) {
            StreamMode::Async
        } else {
            StreamMode::Sync
        };
        Self {
            applied,
            mode,
            window: window.max(1),
            overlap,
            fail_open,
            report,
            trace,
            want_trace,
            ctx,
            text: std::collections::HashMap::new(),
            held: std::collections::HashMap::new(),
            stopped: false,
            blocked_message: None,
            input_tokens: 0,
            deltas: 0,
            first_raw: None,
            first_sent: None,
            started: Instant::now(),
        }
    }

    /// Assess `text` as output with every guardrail: `Ok(None)` when blocked (the guard
    /// stops), else the spans of sensitive values (on `text`).
    async fn check(&mut self, text: &str) -> Result<Option<Vec<(usize, usize)>>, Error> {
        let mut spans = Vec::new();
        for a in &self.applied {
            let scope = if a.trace == TraceMode::Full {
                Scope::Full
            } else {
                Scope::Interventions
            };
            let assessment = match a
                .guardrail
                .assess(&[GuardText::plain(text)], Source::Output, scope)
                .await
            {
                Ok(x) => x,
                Err(e) if self.fail_open => {
                    tracing::warn!(guardrail = %a.guardrail.id, error = %e.message, "a guardrail detector failed mid-stream; letting it through (fail_open)");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.report.add(Source::Output, &assessment);
            if a.trace != TraceMode::Disabled
                && (assessment.intervened() || a.trace == TraceMode::Full)
            {
                let list = self
                    .trace
                    .output
                    .entry(a.guardrail.id.clone())
                    .or_insert_with(|| json!([]));
                if let Some(l) = list.as_array_mut() {
                    l.push(assessment.with_metrics());
                }
            }
            // A remote guardrail's masks come without their places, so a stream window it
            // masks cannot be released in part: it is blocked instead (fail closed).
            if assessment.verdict == Verdict::Blocked
                || (assessment.verdict == Verdict::Masked && a.guardrail.is_remote())
            {
                self.trace.reason = Some(assessment.action_reason());
                self.blocked_message =
                    Some(assessment.blocked_text.unwrap_or_else(|| {
                        a.guardrail.blocked_message(Source::Output).to_string()
                    }));
                return Ok(None);
            }
            if assessment.verdict == Verdict::Masked {
                self.trace.reason.get_or_insert(assessment.action_reason());
            }
            spans.extend(assessment.spans.into_iter().flatten());
        }
        Ok(Some(spans))
    }

    /// `text` with every guardrail's masks (deterministic policies only; the semantic ones
    /// were checked on the window).
    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for a in &self.applied {
            out = a.guardrail.mask(&out, Source::Output);
        }
        out
    }

    /// The events that end the stream at an intervention: the blocked message in its own
    /// block, the block's stop, `guardrail_intervened`, and the usage so far.
    fn intervene(&mut self, open_index: Option<u32>) -> Vec<StreamEvent> {
        self.stopped = true;
        let message = self.blocked_message.take().unwrap_or_else(|| {
            self.applied
                .first()
                .map(|a| a.guardrail.blocked_message(Source::Output).to_string())
                .unwrap_or_default()
        });
        let index = open_index.unwrap_or(0);
        self.held.clear();
        self.text.clear();
        if self.want_trace {
            self.ctx.set_guardrail_trace(self.trace.json());
        }
        vec![
            StreamEvent::ContentBlockDelta {
                index,
                delta: ContentBlockDelta::Text(
                    if open_index.is_some() && self.mode == StreamMode::Async {
                        format!("\n{message}")
                    } else {
                        message
                    },
                ),
            },
            StreamEvent::ContentBlockStop { index },
            StreamEvent::MessageStop {
                stop_reason: StopReason::GuardrailIntervened,
            },
            StreamEvent::Metadata {
                usage: Usage::new(self.input_tokens, self.deltas),
                latency_ms: self.started.elapsed().as_millis() as u64,
            },
        ]
    }

    fn sent(&mut self, events: &[StreamEvent]) {
        let content = events.iter().any(|e| {
            matches!(e, StreamEvent::ContentBlockDelta { delta: ContentBlockDelta::Text(t), .. } if !t.is_empty())
                || matches!(e, StreamEvent::ContentBlockStart { .. })
        });
        if content && self.first_sent.is_none() {
            self.first_sent = Some(Instant::now());
        }
    }

    /// Release what can be released of text block `index` (all of it when `last`).
    async fn release(&mut self, index: u32, last: bool) -> Result<Vec<StreamEvent>, Error> {
        let Some(block) = self.text.get(&index) else {
            return Ok(Vec::new());
        };
        let pending_len = block.raw.len() - block.released;
        if self.mode == StreamMode::Async {
            let unassessed = block.raw.len() - block.assessed;
            if unassessed == 0 || (!last && unassessed < self.window) {
                return Ok(Vec::new());
            }
            // Check the new text with the overlap before it, so a value across the last
            // boundary is seen whole.
            let mut from = block.assessed.saturating_sub(self.overlap);
            while !block.raw.is_char_boundary(from) {
                from -= 1;
            }
            let text = block.raw[from..].to_string();
            let end = block.raw.len();
            if self.check(&text).await?.is_none() {
                return Ok(self.intervene(Some(index)));
            }
            if let Some(b) = self.text.get_mut(&index) {
                b.assessed = end;
            }
            return Ok(Vec::new());
        }
        if pending_len == 0 || (!last && pending_len < self.window + self.overlap) {
            return Ok(Vec::new());
        }
        let pending = block.raw[block.released..].to_string();
        let Some(spans) = self.check(&pending).await? else {
            return Ok(self.intervene(Some(index)));
        };
        let mut cut = if last {
            pending.len()
        } else {
            pending.len() - self.overlap
        };
        while !pending.is_char_boundary(cut) {
            cut -= 1;
        }
        // Never cut through a sensitive value: release up to its start instead.
        for &(s, e) in &spans {
            if s < cut && cut < e {
                cut = s;
            }
        }
        if cut == 0 {
            return Ok(Vec::new());
        }
        let out = self.mask(&pending[..cut]);
        if let Some(b) = self.text.get_mut(&index) {
            b.released += cut;
        }
        Ok(vec![StreamEvent::ContentBlockDelta {
            index,
            delta: ContentBlockDelta::Text(out),
        }])
    }

    /// A held block (tool call, reasoning) ended: check its content and release it (masked),
    /// or intervene.
    async fn release_held(&mut self, index: u32) -> Result<Vec<StreamEvent>, Error> {
        let Some(events) = self.held.remove(&index) else {
            return Ok(Vec::new());
        };
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::ToolUseInput(s) | ContentBlockDelta::ReasoningText(s),
                    ..
                } => Some(s.as_str()),
                _ => None,
            })
            .collect();
        if !text.is_empty() && self.check(&text).await?.is_none() {
            return Ok(self.intervene(None));
        }
        let masked = self.mask(&text);
        if masked == text {
            return Ok(events);
        }
        // Masked: the block's start, its content in one delta, its stop.
        let mut out: Vec<StreamEvent> = events
            .iter()
            .filter(|e| !matches!(e, StreamEvent::ContentBlockDelta { .. }))
            .cloned()
            .collect();
        let is_tool = events.iter().any(|e| {
            matches!(
                e,
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::ToolUseInput(_),
                    ..
                }
            )
        });
        let delta = if is_tool {
            ContentBlockDelta::ToolUseInput(masked)
        } else {
            ContentBlockDelta::ReasoningText(masked)
        };
        let at = out
            .iter()
            .position(|e| matches!(e, StreamEvent::ContentBlockStop { .. }))
            .unwrap_or(out.len());
        out.insert(at, StreamEvent::ContentBlockDelta { index, delta });
        Ok(out)
    }
}

#[async_trait]
impl StreamFilter for StreamGuard {
    async fn push(&mut self, event: StreamEvent) -> Result<Vec<StreamEvent>, Error> {
        if self.stopped {
            return Ok(Vec::new());
        }
        let out = match event {
            StreamEvent::MessageStart { input_tokens, .. } => {
                self.input_tokens = input_tokens.unwrap_or(0);
                vec![event]
            }
            StreamEvent::ContentBlockDelta {
                index,
                delta: ContentBlockDelta::Text(t),
            } => {
                self.deltas += 1;
                self.first_raw.get_or_insert_with(Instant::now);
                let block = self.text.entry(index).or_default();
                block.raw.push_str(&t);
                if self.mode == StreamMode::Async {
                    let mut out = vec![StreamEvent::ContentBlockDelta {
                        index,
                        delta: ContentBlockDelta::Text(t),
                    }];
                    let checked = self.release(index, false).await?;
                    if self.stopped {
                        return Ok(checked);
                    }
                    out.extend(checked);
                    out
                } else {
                    self.release(index, false).await?
                }
            }
            StreamEvent::ContentBlockStart { index, .. } => {
                self.first_raw.get_or_insert_with(Instant::now);
                self.held.entry(index).or_default().push(event);
                Vec::new()
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                // Tool-call arguments and reasoning (with their signatures and encrypted
                // parts) are held with their block until it ends.
                self.deltas += 1;
                self.held
                    .entry(index)
                    .or_default()
                    .push(StreamEvent::ContentBlockDelta { index, delta });
                Vec::new()
            }
            StreamEvent::ContentBlockStop { index } => {
                if self.held.contains_key(&index) {
                    self.held.entry(index).or_default().push(event);
                    self.release_held(index).await?
                } else {
                    let mut out = self.release(index, true).await?;
                    if !self.stopped {
                        out.push(event);
                    }
                    out
                }
            }
            StreamEvent::MessageStop { stop_reason } => {
                // Whatever is still held (a block with no stop) is decided now.
                let mut out = Vec::new();
                let open: Vec<u32> = self.text.keys().copied().collect();
                for index in open {
                    out.extend(self.release(index, true).await?);
                    if self.stopped {
                        return Ok(out);
                    }
                }
                let masked = self.report.verdict == Verdict::Masked;
                out.push(StreamEvent::MessageStop {
                    stop_reason: if masked {
                        StopReason::GuardrailIntervened
                    } else {
                        stop_reason
                    },
                });
                out
            }
            // Token log-probabilities run ahead of the checked text (they would show what a
            // mask hides), so a guarded stream has none.
            StreamEvent::Logprobs { .. } => Vec::new(),
            StreamEvent::Metadata { .. } => {
                // The trace rides on the metadata event (ConverseStream), so it is in the
                // context before the front door writes that event.
                if self.want_trace {
                    self.ctx.set_guardrail_trace(self.trace.json());
                }
                vec![event]
            }
        };
        self.sent(&out);
        Ok(out)
    }

    fn stopped(&self) -> bool {
        self.stopped
    }

    async fn finish(&mut self, recorder: Option<&mut Recorder>) -> Result<Vec<StreamEvent>, Error> {
        let mut out = Vec::new();
        if !self.stopped {
            let open: Vec<u32> = self.text.keys().copied().collect();
            for index in open {
                out.extend(self.release(index, true).await?);
                if self.stopped {
                    break;
                }
            }
        }
        self.sent(&out);
        if self.want_trace {
            self.ctx.set_guardrail_trace(self.trace.json());
        }
        if let Some(r) = recorder {
            r.outcome().guardrail = self.take_report();
        }
        Ok(out)
    }

    fn take_report(&mut self) -> Option<GuardrailReport> {
        if let (Some(raw), Some(sent)) = (self.first_raw, self.first_sent) {
            if self.mode == StreamMode::Sync {
                self.report.stream_hold = Some(sent.saturating_duration_since(raw));
            }
        }
        Some(std::mem::take(&mut self.report))
    }
}
