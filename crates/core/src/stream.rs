//! Streams: opening one so that a failure before any output can still be retried, and the one
//! observer every started stream runs through.
//!
//! The observer is the only wrapper around a stream the pipeline hands to a front door. It
//! enforces the idle and total time limits, notes the time to first token, the usage and how
//! the stream ended, folds the events into one response when a layer asked for it, and
//! records the call's outcome exactly once: at the end, at the first error, or — when the
//! front door drops the stream because the client went away — as a cancelled call.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use modelgate_providers::{ChatStream, Provider};
use modelgate_types::{
    ChatRequest, ContentBlockDelta, Error, ErrorKind, StopReason, StreamEvent, Usage,
};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::chain::total_timeout;
use crate::outcome::Recorder;
use crate::pipeline::StreamLimits;

/// Whether `event` carries content for the caller: a non-empty text delta, any other delta, or
/// the start of a tool-use block.
fn is_content(event: &StreamEvent) -> bool {
    match event {
        StreamEvent::ContentBlockDelta {
            delta: ContentBlockDelta::Text(t),
            ..
        } => !t.is_empty(),
        StreamEvent::ContentBlockDelta { .. } | StreamEvent::ContentBlockStart { .. } => true,
        StreamEvent::MessageStart { .. }
        | StreamEvent::ContentBlockStop { .. }
        | StreamEvent::MessageStop { .. }
        | StreamEvent::Logprobs { .. }
        | StreamEvent::Metadata { .. } => false,
    }
}

/// A stream whose first output is in hand: the events read so far and the rest.
pub(crate) struct Opened {
    head: Vec<StreamEvent>,
    rest: ChatStream,
}

impl Opened {
    /// Whether the model refused on content-policy grounds before sending any content (its
    /// stream stopped with `content_filtered` first): such a refusal can still fall back,
    /// since nothing reached the caller.
    pub(crate) fn refused(&self) -> bool {
        matches!(
            self.head.last(),
            Some(StreamEvent::MessageStop {
                stop_reason: StopReason::ContentFiltered
            })
        )
    }

    /// The whole stream again: the events read so far, then the rest.
    pub(crate) fn into_stream(self) -> ChatStream {
        futures::stream::iter(self.head.into_iter().map(Ok))
            .chain(self.rest)
            .boxed()
    }
}

/// Open a stream and wait for its first output — events up to and including the first one
/// that carries content or ends the message (the start, empty text deltas and block stops are
/// not output) — so that a failure or a refusal before anything reached the caller can still
/// be retried or fall back.
pub(crate) async fn open_stream(
    provider: Arc<dyn Provider>,
    request: ChatRequest,
    first_token: Duration,
) -> Result<Opened, Error> {
    let open = async {
        let mut stream = provider.converse_stream(request).await?;
        let mut head = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event?;
            let output = is_content(&event) || matches!(event, StreamEvent::MessageStop { .. });
            head.push(event);
            if output {
                break;
            }
        }
        Ok(Opened { head, rest: stream })
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

/// Run a started stream under its time limits and record the call's outcome when it ends
/// (see the module docs).
pub(crate) fn observe(
    inner: ChatStream,
    limits: StreamLimits,
    want_response: bool,
    guard: Option<Box<dyn crate::guardrails::layer::StreamFilter>>,
    recorder: Recorder,
    span: tracing::Span,
) -> ChatStream {
    Box::pin(async_stream::stream! {
        let mut seen: Option<Vec<StreamEvent>> = want_response.then(Vec::new);
        let mut state = Observed {
            inner: Some(inner),
            watch: Watch { recorder: Some(recorder), tally: Tally::default() },
            limits,
            span: span.clone(),
            guard,
        };
        while let Some(inner) = state.inner.as_mut() {
            let watch = &mut state.watch;
            let now = Instant::now();
            let limit = match (limits.idle, limits.deadline) {
                (Some(idle), Some(d)) => Some((now + idle).min(d)),
                (Some(idle), None) => Some(now + idle),
                (None, d) => d,
            };
            let next = inner.next().instrument(span.clone());
            let item = match limit {
                Some(at) => match tokio::time::timeout_at(at, next).await {
                    Ok(item) => item,
                    Err(_) => Some(Err(stalled(&limits))),
                },
                None => next.await,
            };
            match item {
                Some(Ok(event)) => {
                    // The finishers (the response cache) get the model's own answer; the
                    // client gets what the guard releases.
                    if let Some(s) = &mut seen {
                        s.push(event.clone());
                    }
                    let Some(g) = state.guard.as_mut() else {
                        watch.see(&event);
                        yield Ok(event);
                        continue;
                    };
                    let released = g.push(event).instrument(span.clone()).await;
                    match released {
                        Ok(events) => {
                            for e in events {
                                state.watch.see(&e);
                                yield Ok(e);
                            }
                        }
                        Err(e) => {
                            state.inner = None;
                            let _ = g.finish(state.watch.recorder.as_mut()).await;
                            state.watch.finish(Some(&e), None);
                            yield Err(e);
                            break;
                        }
                    }
                    if g.stopped() {
                        // The guard intervened: the model's stream is dropped and the call
                        // ends here, answered (with the blocked message).
                        state.inner = None;
                        let _ = g.finish(state.watch.recorder.as_mut()).await;
                        state.watch.finish(None, None);
                        break;
                    }
                }
                Some(Err(e)) => {
                    state.inner = None;
                    if let Some(g) = state.guard.as_mut() {
                        let _ = g.finish(state.watch.recorder.as_mut()).await;
                    }
                    state.watch.finish(Some(&e), None);
                    yield Err(e);
                    break;
                }
                None => {
                    state.inner = None;
                    if let Some(g) = state.guard.as_mut() {
                        match g.finish(state.watch.recorder.as_mut()).await {
                            Ok(events) => {
                                for e in events {
                                    state.watch.see(&e);
                                    yield Ok(e);
                                }
                            }
                            Err(e) => {
                                state.watch.finish(Some(&e), None);
                                yield Err(e);
                                break;
                            }
                        }
                    }
                    let response = match seen.take() {
                        Some(events) => {
                            let replay = futures::stream::iter(events.into_iter().map(Ok)).boxed();
                            modelgate_providers::collect_stream(String::new(), replay).await.ok()
                        }
                        None => None,
                    };
                    state.watch.finish(None, response.as_ref());
                    break;
                }
            }
        }
        // Dropped before this point (the client went away): `Observed`'s drop records a
        // cancelled call — with the tally so far, or, for a model that asks for it, once the
        // rest of the stream has been read for its final usage.
    })
}

/// A started stream and the watch on it, owned by the observer.
struct Observed {
    /// The stream, until it ended.
    inner: Option<ChatStream>,
    watch: Watch,
    limits: StreamLimits,
    span: tracing::Span,
    /// The guardrails' stream guard, when the call has one.
    guard: Option<Box<dyn crate::guardrails::layer::StreamFilter>>,
}

impl Drop for Observed {
    /// The client left mid-stream. For a model with `finish_cancelled_streams`, read the rest
    /// of the stream on a task (until its end or the call's deadline, its events discarded) so
    /// the cancelled call's usage is the provider's final figure; otherwise the watch records
    /// the tally so far.
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        // What the guardrails did so far goes into the cancelled call's outcome.
        if let (Some(g), Some(r)) = (self.guard.as_mut(), self.watch.recorder.as_mut()) {
            r.outcome().guardrail = g.take_report();
        }
        if !self.limits.finish_cancelled || self.watch.recorder.is_none() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut watch = std::mem::replace(
            &mut self.watch,
            Watch {
                recorder: None,
                tally: Tally::default(),
            },
        );
        let deadline = self.limits.deadline;
        rt.spawn(
            async move {
                let drain = async {
                    while let Some(Ok(event)) = inner.next().await {
                        watch.tally.see(&event);
                    }
                };
                match deadline {
                    Some(at) => {
                        let _ = tokio::time::timeout_at(at, drain).await;
                    }
                    None => drain.await,
                }
                // Dropping the watch records the cancelled call with what was read.
                drop(watch);
            }
            .instrument(self.span.clone()),
        );
    }
}

/// The error that ends a stream that went quiet for too long.
fn stalled(limits: &StreamLimits) -> Error {
    if limits.deadline.is_some_and(|d| Instant::now() >= d) {
        return total_timeout();
    }
    let idle = limits.idle.unwrap_or_default();
    Error::new(
        ErrorKind::Timeout,
        format!(
            "The model's stream stalled for {}s (idle timeout).",
            idle.as_secs_f64()
        ),
    )
}

/// What a stream has carried so far.
#[derive(Default)]
struct Tally {
    input_tokens: Option<u32>,
    deltas: u32,
    usage: Option<Usage>,
    stop: Option<modelgate_types::StopReason>,
}

impl Tally {
    /// Note `event`; true when it is the first content.
    fn see(&mut self, event: &StreamEvent) -> bool {
        match event {
            StreamEvent::MessageStart { input_tokens, .. } => {
                self.input_tokens = *input_tokens;
                false
            }
            StreamEvent::Metadata { usage, .. } => {
                self.usage = Some(*usage);
                false
            }
            StreamEvent::MessageStop { stop_reason } => {
                self.stop = Some(*stop_reason);
                false
            }
            e if is_content(e) => {
                self.deltas += 1;
                self.deltas == 1
            }
            _ => false,
        }
    }

    /// Put the usage into the outcome: the provider's figure when it came, else what was
    /// streamed so far (the prompt's count when known, one output token per content delta).
    fn settle(&self, recorder: &mut Recorder) {
        let o = recorder.outcome();
        o.stop_reason = self.stop;
        match self.usage {
            Some(u) => {
                o.usage = Some(u);
                o.usage_complete = true;
            }
            None => {
                o.usage = Some(Usage::new(self.input_tokens.unwrap_or(0), self.deltas));
                o.usage_complete = false;
            }
        }
    }
}

/// The recorder of a streamed call and what its stream carried.
struct Watch {
    recorder: Option<Recorder>,
    tally: Tally,
}

impl Watch {
    fn see(&mut self, event: &StreamEvent) {
        if self.tally.see(event) {
            if let Some(r) = &mut self.recorder {
                r.first_token();
            }
        }
    }

    fn finish(&mut self, error: Option<&Error>, response: Option<&modelgate_types::ChatResponse>) {
        if let Some(mut r) = self.recorder.take() {
            self.tally.settle(&mut r);
            r.finish(error, response);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut r) = self.recorder.take() {
            self.tally.settle(&mut r);
            // Dropping the unfinished recorder records the call as cancelled.
        }
    }
}
