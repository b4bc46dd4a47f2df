//! An in-process scripted provider: the test double for pipeline tests that run on a paused
//! clock (retries, breakers, health checks, fallbacks), where a real socket would fire its own
//! timeouts as the clock jumps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use modelgate_providers::{response_events, Capabilities, ChatStream, ModelKind, Provider};
use modelgate_types::{
    ChatRequest, ChatResponse, Error, ErrorKind, Message, Role, StopReason, StreamEvent, Usage,
};
use tokio::time::Instant;

/// What the provider does on one call.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this text (usage 10 in, 5 out).
    Answer(String),
    /// Answer with this text and stop reason.
    AnswerWith(String, StopReason),
    /// Fail before the stream starts.
    Fail(Error),
    /// Start the stream, send this text (none when empty), then fail with a dropped
    /// connection.
    Cut(String),
    /// Wait, then do the inner step.
    Slow(Duration, Box<Step>),
    /// Start the stream, send one delta, then never send anything again.
    Stall,
}

impl Step {
    /// An error of `kind` as an upstream answers it (e.g. a 429 or a 503).
    pub fn error(kind: ErrorKind) -> Self {
        Step::Fail(Error::upstream(kind, format!("scripted {kind:?}")))
    }
}

/// A provider that follows a script, counts its calls and can be made unhealthy.
pub struct ScriptedProvider {
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    calls: AtomicUsize,
    call_times: Mutex<Vec<Instant>>,
    healthy: AtomicBool,
    health_checks: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ScriptedProvider {
    /// A healthy provider that answers `text` when its script is empty.
    pub fn new(text: &str) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::Answer(text.into())),
            calls: AtomicUsize::new(0),
            call_times: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
        })
    }

    /// Queue steps for the next calls.
    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.script).extend(steps);
    }

    /// What to do once the queue is empty.
    pub fn set_default(&self, step: Step) {
        *lock(&self.default) = step;
    }

    /// Make health checks pass or fail.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Calls (chat requests) so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// When each call arrived (the Tokio clock, paused or not).
    pub fn call_times(&self) -> Vec<Instant> {
        lock(&self.call_times).clone()
    }

    /// Health checks so far.
    pub fn health_checks(&self) -> usize {
        self.health_checks.load(Ordering::SeqCst)
    }
}

fn answer(model: &str, text: &str, stop_reason: StopReason) -> ChatResponse {
    ChatResponse {
        model: model.into(),
        message: Message::text(Role::Assistant, text),
        stop_reason,
        usage: Usage::new(10, 5),
        latency_ms: 1,
        logprobs: None,
    }
}

fn cut() -> Error {
    Error::new(
        ErrorKind::ServiceUnavailable,
        "scripted: the connection dropped mid-stream",
    )
    .from_provider()
}

fn start() -> StreamEvent {
    StreamEvent::MessageStart {
        role: Role::Assistant,
        input_tokens: Some(10),
    }
}

fn delta(text: &str) -> StreamEvent {
    StreamEvent::ContentBlockDelta {
        index: 0,
        delta: modelgate_types::ContentBlockDelta::Text(text.into()),
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn capabilities(&self) -> Capabilities {
        Capabilities::upstream(ModelKind::Chat)
    }

    async fn health_check(&self) -> Result<(), Error> {
        self.health_checks.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::ServiceUnavailable,
                "scripted: unhealthy",
            ))
        }
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        lock(&self.call_times).push(Instant::now());
        let mut step = lock(&self.script)
            .pop_front()
            .unwrap_or_else(|| lock(&self.default).clone());
        while let Step::Slow(wait, inner) = step {
            tokio::time::sleep(wait).await;
            step = *inner;
        }
        let events: Vec<Result<StreamEvent, Error>> = match step {
            Step::Answer(text) => {
                response_events(&answer(&request.model, &text, StopReason::EndTurn))
                    .into_iter()
                    .map(Ok)
                    .collect()
            }
            Step::AnswerWith(text, stop) => response_events(&answer(&request.model, &text, stop))
                .into_iter()
                .map(Ok)
                .collect(),
            Step::Fail(e) => return Err(e),
            Step::Cut(text) => {
                let mut events = vec![Ok(start())];
                if !text.is_empty() {
                    events.push(Ok(delta(&text)));
                }
                events.push(Err(cut()));
                events
            }
            Step::Stall => {
                let head = futures::stream::iter(vec![Ok(start()), Ok(delta("…"))]);
                return Ok(head.chain(futures::stream::pending()).boxed());
            }
            Step::Slow(..) => Vec::new(),
        };
        Ok(futures::stream::iter(events).boxed())
    }

    async fn count_tokens(&self, _request: &ChatRequest) -> Result<u32, Error> {
        Ok(10)
    }
}
