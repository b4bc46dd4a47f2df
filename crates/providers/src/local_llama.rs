//! Embedded chat model: a GGUF run in-process by llama.cpp, with continuous batching.
//!
//! One engine thread owns the llama.cpp context. Requests arrive through a bounded queue; the
//! engine admits up to `parallel` of them as sequences of one context (each sequence has its own
//! KV-cache stream, so its arithmetic does not depend on what else is running) and on every step
//! decodes one batch that holds the next token of every generating sequence plus prompt chunks
//! of newly admitted ones. Requests beyond the queue depth are refused with a throttling error.
//! Tokens are streamed to the caller as soon as they are sampled; a caller that goes away frees
//! its slot on the next step.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use modelgate_types::{
    ChatRequest, ContentBlock, ContentBlockDelta, ContentBlockStart, Error, ErrorKind, Role,
    StopReason, StreamEvent, TokenLogprob, TopLogprob, Usage,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::constrain::{self, CallSplitter, Constraint, Piece};
use crate::stop::TextAssembler;
use crate::{Capabilities, ChatStream, Provider};

/// Tunable settings of the embedded chat model: `[local.chat]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalLlamaSettings {
    /// Context window of each request, in tokens (the model was trained on 8192). Default 4096.
    pub context_size: u32,
    /// Requests generated together (continuous-batching slots). Default 4.
    pub parallel: u32,
    /// Requests that may wait for a slot; beyond this, 429. Default 64.
    pub queue_depth: usize,
    /// CPU threads for llama.cpp; 0 means every core. Default 0.
    pub threads: u32,
    /// Most tokens decoded in one step (prompt chunks plus one token per generating request).
    /// Default 512.
    pub batch_size: u32,
    /// `maxTokens` when the caller sets none. Default 512.
    pub default_max_tokens: u32,
    /// Temperature when the caller sets none. Default 0.7.
    pub default_temperature: f32,
}

impl Default for LocalLlamaSettings {
    fn default() -> Self {
        Self {
            context_size: 4096,
            parallel: 4,
            queue_depth: 64,
            threads: 0,
            batch_size: 512,
            default_max_tokens: 512,
            default_temperature: 0.7,
        }
    }
}

impl LocalLlamaSettings {
    /// Range checks; the message names the key under `[local.chat]`.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("context_size", self.context_size as u64),
            ("parallel", self.parallel as u64),
            ("queue_depth", self.queue_depth as u64),
            ("batch_size", self.batch_size as u64),
            ("default_max_tokens", self.default_max_tokens as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("key `local.chat.{key}` must be greater than 0"));
        }
        if !(64..=8192).contains(&self.context_size) {
            return Err("key `local.chat.context_size` must be between 64 and 8192 (the model's trained window)".into());
        }
        if self.parallel > 64 {
            return Err("key `local.chat.parallel` must be at most 64".into());
        }
        if self.batch_size < self.parallel {
            return Err(
                "key `local.chat.batch_size` must be at least `local.chat.parallel`".into(),
            );
        }
        if !(0.0..=2.0).contains(&self.default_temperature) {
            return Err("key `local.chat.default_temperature` must be between 0 and 2".into());
        }
        Ok(())
    }

    /// CPU threads to use: `threads`, or every core when it is 0.
    fn thread_count(&self) -> i32 {
        if self.threads > 0 {
            return self.threads as i32;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() as i32)
            .unwrap_or(2)
    }
}

/// What [`LocalLlama::load`] needs: the GGUF file and the settings.
#[derive(Debug, Clone)]
pub struct LocalLlamaConfig {
    /// Path of the GGUF file.
    pub model_path: PathBuf,
    /// Tunable settings.
    pub settings: LocalLlamaSettings,
}

/// llama.cpp may be initialised once per process; every model shares this backend.
fn backend() -> Result<&'static LlamaBackend, Error> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("llama.cpp backend failed to start: {e}")))
}

/// What the engine sends back for one request.
#[derive(Debug)]
enum EngineEvent {
    /// Generated text.
    Text(String),
    /// The log-probabilities of the next generated token (sent before its text, and only when
    /// the request asked for them).
    Logprob(TokenLogprob),
    /// Generation ended.
    Done {
        stop_reason: StopReason,
        output_tokens: u32,
    },
    /// Generation failed.
    Failed(Error),
}

/// A request waiting for a slot.
struct Job {
    prompt: Vec<LlamaToken>,
    max_tokens: u32,
    temperature: f32,
    top_p: f32,
    stops: Vec<String>,
    /// Sampling seed (`None`: a fresh one).
    seed: Option<u32>,
    /// Alternatives per token when log-probabilities are asked for.
    logprobs: Option<u8>,
    /// Sample from the `k` most likely tokens only.
    top_k: Option<u32>,
    /// OpenAI's frequency and presence penalties over the generated tokens (0 is none).
    penalties: (f32, f32),
    /// Logit bias per token id (checked against the vocabulary).
    logit_bias: Vec<LlamaLogitBias>,
    /// Grammar the output must follow.
    constraint: Option<Constraint>,
    events: mpsc::UnboundedSender<EngineEvent>,
}

/// The embedded chat provider.
pub struct LocalLlama {
    model: Arc<LlamaModel>,
    template: Arc<LlamaChatTemplate>,
    config: LocalLlamaConfig,
    queue: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
    /// Slots generating now (written by the engine thread).
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl LocalLlama {
    /// Load the GGUF and start the engine thread.
    pub fn load(config: LocalLlamaConfig) -> Result<Self, Error> {
        let backend = backend()?;
        if !config.model_path.is_file() {
            return Err(Error::internal(format!(
                "model file {} is missing; run `modelgate models pull`",
                config.model_path.display()
            )));
        }
        let model =
            LlamaModel::load_from_file(backend, &config.model_path, &LlamaModelParams::default())
                .map_err(|e| {
                Error::internal(format!("cannot load {}: {e}", config.model_path.display()))
            })?;
        let template = model
            .chat_template(None)
            .map_err(|e| Error::internal(format!("the GGUF has no usable chat template: {e}")))?;
        let model = Arc::new(model);
        let (queue, rx) = mpsc::channel(config.settings.queue_depth.max(1));
        let alive = Arc::new(AtomicBool::new(true));
        let engine_model = Arc::clone(&model);
        let engine_config = config.clone();
        let engine_alive = Arc::clone(&alive);
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let engine_active = Arc::clone(&active);
        // The context is created on the engine thread and never leaves it.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("llama-engine".into())
            .spawn(move || {
                run_engine(&engine_model, &engine_config, rx, ready_tx, &engine_active);
                engine_alive.store(false, Ordering::SeqCst);
            })
            .map_err(|e| Error::internal(format!("cannot start the llama.cpp engine: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::internal(
                    "the llama.cpp engine stopped while starting",
                ))
            }
        }
        Ok(Self {
            model,
            template: Arc::new(template),
            config,
            queue,
            alive,
            active,
        })
    }

    /// Render the chat template and tokenize, on the blocking pool: for an input near the body
    /// limit this is milliseconds of CPU that must not hold up an async worker thread. The
    /// request goes in and comes back out, so nothing is cloned.
    /// OpenAI's `logit_bias` for this model: token ids must be in its vocabulary.
    fn logit_bias(
        &self,
        bias: Option<&std::collections::BTreeMap<u32, f32>>,
    ) -> Result<Vec<LlamaLogitBias>, Error> {
        let n_vocab = u32::try_from(self.model.n_vocab()).unwrap_or(0);
        bias.into_iter()
            .flatten()
            .map(|(&token, &b)| match i32::try_from(token) {
                Ok(id) if token < n_vocab => Ok(LlamaLogitBias::new(LlamaToken(id), b)),
                _ => Err(Error::validation(format!(
                    "logit_bias: token id {token} is not in the vocabulary of this model (ids 0 to {})",
                    n_vocab.saturating_sub(1)
                ))
                .with_code("invalid_value")),
            })
            .collect()
    }

    async fn prompt_tokens(&self, request: ChatRequest, grammar: bool) -> Result<Prepared, Error> {
        let (model, template) = (Arc::clone(&self.model), Arc::clone(&self.template));
        tokio::task::spawn_blocking(move || {
            // The schema check and grammar come first: a refused schema costs no tokenising.
            // Counting tokens needs neither.
            let constraint = match grammar {
                true => constrain::constraint(&request)?,
                false => None,
            };
            let tokens = prompt_tokens(&model, &template, &request)?;
            Ok(Prepared {
                tokens,
                constraint,
                request,
            })
        })
        .await
        .map_err(|e| Error::internal(format!("tokenising the prompt failed: {e}")))?
    }
}

/// A request ready for the engine.
struct Prepared {
    tokens: Vec<LlamaToken>,
    constraint: Option<Constraint>,
    request: ChatRequest,
}

/// Render the chat template and tokenize. Text, tool calls and tool results are understood
/// (the last two as text in the `<tool_call>` convention, see `constrain`); the system prompt
/// gains the response schema and the tool signatures when the request has them.
fn prompt_tokens(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    request: &ChatRequest,
) -> Result<Vec<LlamaToken>, Error> {
    let mut chat = Vec::with_capacity(request.messages.len() + 1);
    let mut system: Vec<String> = request
        .system
        .iter()
        .filter_map(|s| s.text())
        .map(str::to_string)
        .collect();
    system.extend(constrain::format_prompt(request));
    system.extend(constrain::tools_prompt(request));
    // The template inserts a default system prompt when there is none; that degrades this
    // small model's greedy output, so a system message is only sent when there is one.
    if !system.is_empty() {
        chat.push(chat_message("system", system.join("\n"))?);
    }
    for message in &request.messages {
        let mut text = String::new();
        for block in &message.content {
            match block {
                ContentBlock::ReasoningContent(_) | ContentBlock::CachePoint(_) => {}
                ContentBlock::Image(_) | ContentBlock::Document(_) => {
                    return Err(Error::validation(format!(
                        "The model '{}' accepts text only; images and documents are not supported.",
                        request.model
                    )))
                }
                block => {
                    if let Some(piece) = constrain::block_text(block) {
                        if !text.is_empty() && !matches!(block, ContentBlock::Text(_)) {
                            text.push('\n');
                        }
                        text.push_str(&piece);
                    }
                }
            }
        }
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        chat.push(chat_message(role, text)?);
    }
    let prompt = model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| Error::internal(format!("chat template failed: {e}")))?;
    Ok(model.vocab().tokenize(prompt.as_bytes(), true, true))
}

fn chat_message(role: &str, content: String) -> Result<LlamaChatMessage, Error> {
    LlamaChatMessage::new(role.into(), content)
        .map_err(|_| Error::validation("Message text must not contain NUL characters."))
}

#[async_trait]
impl Provider for LocalLlama {
    fn load(&self) -> Option<crate::Load> {
        Some(crate::Load {
            queued: self.queue.max_capacity() - self.queue.capacity(),
            active: self.active.load(Ordering::Relaxed),
            slots: self.config.settings.parallel.max(1) as usize,
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            embeddings: false,
            tools: true,
            images: false,
            json_output: true,
            logprobs: true,
            seed: true,
            penalties: true,
            wire: None,
        }
    }

    fn is_ready(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        Ok(self
            .prompt_tokens(request.clone(), false)
            .await?
            .tokens
            .len() as u32)
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        let ChatRequest {
            model: _,
            system: _,
            messages: _,
            inference,
            // Both enforced by the grammar built in `prompt_tokens`.
            tools: _,
            response_format: _,
            reasoning,
            generation,
            // Nothing to send it to; the gateway reads it (routing, records).
            end_user: _,
            // Another dialect's parameters never reach the embedded model
            // (`Capabilities::fit` takes them out or refuses the call).
            native: _,
        } = &request;
        // One call per turn is all the tool grammar allows, so `parallel_tool_calls` is met
        // either way.
        if reasoning.is_some() {
            // The embedded model has no thinking mode; it answers directly (docs/providers.md).
            tracing::warn!(model = %request.model, "reasoning budget dropped: the embedded model does not reason");
        }
        let modelgate_types::InferenceConfig {
            max_tokens,
            temperature,
            top_p,
            stop_sequences,
        } = inference;
        let stop_sequences = stop_sequences.clone();
        let (max_tokens, temperature, top_p) = (*max_tokens, *temperature, *top_p);
        // A 64-bit seed folds into llama.cpp's 32 bits.
        let seed = generation.seed.map(|s| (s ^ (s >> 32)) as u32);
        let logprobs = generation.logprobs;
        let top_k = generation.top_k;
        let penalties = (
            generation.frequency_penalty.unwrap_or(0.0),
            generation.presence_penalty.unwrap_or(0.0),
        );
        let logit_bias = self.logit_bias(generation.logit_bias.as_ref())?;
        let Prepared {
            tokens: prompt,
            constraint,
            request,
        } = self.prompt_tokens(request, true).await?;
        let tools = constraint.as_ref().is_some_and(|c| c.calls);
        let input_tokens = prompt.len() as u32;
        let window = self.config.settings.context_size;
        if input_tokens >= window {
            return Err(Error::validation(format!(
                "The input is {input_tokens} tokens long; the model '{}' accepts at most {} input tokens.",
                request.model,
                window - 1
            ))
            .with_code("context_length_exceeded"));
        }
        let room = window - input_tokens;
        let max_tokens = max_tokens
            .unwrap_or(self.config.settings.default_max_tokens)
            .min(room);
        let (events, mut rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            max_tokens,
            temperature: temperature.unwrap_or(self.config.settings.default_temperature),
            top_p: top_p.unwrap_or(1.0),
            stops: stop_sequences,
            seed,
            logprobs,
            top_k,
            penalties,
            logit_bias,
            constraint,
            events,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::new(
                ErrorKind::Throttling,
                "The embedded model is at capacity (all slots busy and the queue is full). Retry shortly.",
            ),
            mpsc::error::TrySendError::Closed(_) => Error::new(
                ErrorKind::ServiceUnavailable,
                "The embedded model engine is not running.",
            ),
        })?;
        let started = Instant::now();
        let stream = async_stream(move |tx| async move {
            let mut out = Output::new(tools);
            let _ = tx.send(Ok(StreamEvent::MessageStart {
                role: Role::Assistant,
                input_tokens: Some(input_tokens),
            }));
            loop {
                let event = tokio::select! {
                    event = rx.recv() => event,
                    _ = tx.closed() => return,
                };
                let (events, last) = match event {
                    None => (
                        vec![Err(Error::internal(
                            "the embedded model engine stopped during generation",
                        ))],
                        true,
                    ),
                    Some(EngineEvent::Logprob(token)) => {
                        out.logprobs.push(token);
                        continue;
                    }
                    Some(EngineEvent::Text(text)) => (out.text(&text), false),
                    Some(EngineEvent::Done {
                        stop_reason,
                        output_tokens,
                    }) => {
                        let mut events = out.finish(stop_reason);
                        events.push(Ok(StreamEvent::Metadata {
                            usage: Usage::new(input_tokens, output_tokens),
                            latency_ms: started.elapsed().as_millis() as u64,
                        }));
                        (events, true)
                    }
                    Some(EngineEvent::Failed(e)) => (vec![Err(e)], true),
                };
                // A failed send means the caller went away: returning drops `rx`, and the
                // engine frees the slot on its next step.
                for event in events {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        });
        Ok(stream)
    }
}

/// Turns the engine's text into content blocks: text, and tool calls when tools are on.
struct Output {
    splitter: Option<CallSplitter>,
    /// Index of the open text block.
    text_block: Option<u32>,
    next_block: u32,
    called: bool,
    /// Log-probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<TokenLogprob>,
}

type Events = Vec<Result<StreamEvent, Error>>;

impl Output {
    fn new(tools: bool) -> Self {
        Self {
            splitter: tools.then(CallSplitter::default),
            text_block: None,
            next_block: 0,
            called: false,
            logprobs: Vec::new(),
        }
    }

    fn text(&mut self, text: &str) -> Events {
        let mut events = Vec::new();
        match self.splitter.as_mut() {
            None => self.push_text(text.to_string(), &mut events),
            Some(splitter) => {
                for piece in splitter.push(text) {
                    match piece {
                        Piece::Text(t) => self.push_text(t, &mut events),
                        Piece::Call { name, arguments } => {
                            self.push_call(name, &arguments, &mut events)
                        }
                    }
                }
            }
        }
        events
    }

    fn push_text(&mut self, text: String, events: &mut Events) {
        let index = *self.text_block.get_or_insert_with(|| {
            self.next_block += 1;
            self.next_block - 1
        });
        if !self.logprobs.is_empty() {
            events.push(Ok(StreamEvent::Logprobs {
                index,
                tokens: std::mem::take(&mut self.logprobs),
            }));
        }
        events.push(Ok(StreamEvent::ContentBlockDelta {
            index,
            delta: ContentBlockDelta::Text(text),
        }));
    }

    fn push_call(&mut self, name: String, arguments: &serde_json::Value, events: &mut Events) {
        if let Some(index) = self.text_block.take() {
            events.push(Ok(StreamEvent::ContentBlockStop { index }));
        }
        // The call's own tokens are not text; their log-probabilities have no place to go.
        self.logprobs.clear();
        let index = self.next_block;
        self.next_block += 1;
        self.called = true;
        events.push(Ok(StreamEvent::ContentBlockStart {
            index,
            start: ContentBlockStart::ToolUse {
                tool_use_id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                name,
            },
        }));
        events.push(Ok(StreamEvent::ContentBlockDelta {
            index,
            delta: ContentBlockDelta::ToolUseInput(arguments.to_string()),
        }));
        events.push(Ok(StreamEvent::ContentBlockStop { index }));
    }

    fn finish(&mut self, stop_reason: StopReason) -> Events {
        let mut events = Vec::new();
        if let Some(rest) = self.splitter.as_mut().and_then(CallSplitter::finish) {
            self.push_text(rest, &mut events);
        }
        if self.next_block == 0 {
            // Every answer has a content block, even an empty one.
            self.push_text(String::new(), &mut events);
        }
        if let Some(index) = self.text_block.take() {
            events.push(Ok(StreamEvent::ContentBlockStop { index }));
        }
        let stop_reason = match stop_reason {
            StopReason::EndTurn if self.called => StopReason::ToolUse,
            other => other,
        };
        events.push(Ok(StreamEvent::MessageStop { stop_reason }));
        events
    }
}

/// Run `producer` as a task feeding an unbounded channel and expose the channel as a stream.
/// When the consumer drops the stream the channel closes and the engine notices the caller left.
fn async_stream<F, Fut>(producer: F) -> ChatStream
where
    F: FnOnce(mpsc::UnboundedSender<Result<StreamEvent, Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(producer(tx));
    tokio_stream_from(rx).boxed()
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<Result<StreamEvent, Error>>,
) -> impl futures::Stream<Item = Result<StreamEvent, Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One sequence being served.
struct Slot {
    seq: i32,
    job: Job,
    sampler: LlamaSampler,
    /// Prompt tokens not yet decoded.
    next_prompt: usize,
    /// Position of the next token fed to the model.
    pos: i32,
    /// Token sampled last, fed on the next step.
    last: Option<LlamaToken>,
    generated: u32,
    text: TextAssembler,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    done: bool,
}

/// The job's sampler: its grammar first (it masks every token that cannot continue a valid
/// answer), then logit bias and penalties, then greedy or top-k / top-p / temperature /
/// seeded draw.
fn sampler_for(job: &Job, model: &LlamaModel) -> Result<LlamaSampler, Error> {
    let mut chain = Vec::with_capacity(8);
    if let Some(c) = &job.constraint {
        let grammar = match c.trigger {
            None => LlamaSampler::grammar(model, &c.grammar, "root"),
            Some(trigger) => LlamaSampler::grammar_lazy(model, &c.grammar, "root", [trigger], &[]),
        };
        chain.push(grammar.map_err(|e| {
            Error::internal(format!("the output grammar could not be loaded: {e}"))
        })?);
    }
    if !job.logit_bias.is_empty() {
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &job.logit_bias));
    }
    if job.penalties != (0.0, 0.0) {
        // Over every generated token, as OpenAI counts them; no repetition penalty (1.0).
        let last_n = i32::try_from(job.max_tokens).unwrap_or(i32::MAX);
        let (frequency, presence) = job.penalties;
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            last_n,
            1.0,
            frequency,
            presence,
        ));
    }
    if job.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seed = job.seed.unwrap_or_else(|| {
            COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed)
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0x5eed)
        });
        if let Some(k) = job.top_k {
            chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
        }
        chain.push(LlamaSampler::top_p(job.top_p, 1));
        chain.push(LlamaSampler::temp(job.temperature));
        chain.push(LlamaSampler::dist(seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

/// The sampled token's log-probability under the model's distribution at `at` (before any
/// grammar or temperature), with the `top` most likely alternatives.
fn token_logprob(
    ctx: &LlamaContext<'_>,
    at: i32,
    token: LlamaToken,
    top: u8,
    model: &LlamaModel,
) -> TokenLogprob {
    let logits = ctx.get_logits_ith(at);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let vocab = model.vocab();
    let piece = |t: LlamaToken| vocab.token_to_piece(t, false, None);
    // The `top` highest logits, kept sorted (top ≤ 20, so insertion beats a full sort).
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(top as usize + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top as usize || l > best[best.len() - 1].1 {
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i, l));
                best.truncate(top as usize);
            }
        }
    }
    let bytes = piece(token);
    let logprob = logits
        .get(token.0 as usize)
        .map_or(f32::NEG_INFINITY, |&l| l - log_sum);
    TokenLogprob {
        token: String::from_utf8_lossy(&bytes).into_owned(),
        logprob,
        bytes,
        top: best
            .into_iter()
            .map(|(i, l)| {
                let bytes = piece(LlamaToken(i as i32));
                TopLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    logprob: l - log_sum,
                    bytes,
                }
            })
            .collect(),
    }
}

fn run_engine(
    model: &LlamaModel,
    config: &LocalLlamaConfig,
    mut rx: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), Error>>,
    active: &std::sync::atomic::AtomicUsize,
) {
    let parallel = config.settings.parallel.max(1);
    let threads = config.settings.thread_count();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(
            config.settings.context_size.saturating_mul(parallel),
        ))
        .with_n_seq_max(parallel)
        .with_kv_unified(false)
        .with_n_batch(config.settings.batch_size)
        .with_n_ubatch(config.settings.batch_size)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(Error::internal(format!(
                "cannot create the llama.cpp context: {e}"
            ))));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(config.settings.batch_size as usize, 1);
    let mut slots: Vec<Slot> = Vec::with_capacity(parallel as usize);
    let mut free: Vec<i32> = (0..parallel as i32).rev().collect();
    let mut closed = false;
    loop {
        // Admit waiting requests into free slots; block only when nothing is running.
        while !free.is_empty() && !closed {
            let job = if slots.is_empty() {
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => {
                        closed = true;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            };
            if job.events.is_closed() {
                continue;
            }
            let sampler = match sampler_for(&job, model) {
                Ok(sampler) => sampler,
                Err(e) => {
                    let _ = job.events.send(EngineEvent::Failed(e));
                    continue;
                }
            };
            let Some(seq) = free.pop() else { break };
            let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            slots.push(Slot {
                seq,
                sampler,
                text: TextAssembler::new(job.stops.clone()),
                job,
                next_prompt: 0,
                pos: 0,
                last: None,
                generated: 0,
                logits_at: None,
                done: false,
            });
        }
        active.store(slots.len(), Ordering::Relaxed);
        if slots.is_empty() {
            if closed {
                return;
            }
            continue;
        }
        if let Err(e) = step(&mut ctx, &mut batch, &mut slots, config, model) {
            for slot in &mut slots {
                let _ = slot.job.events.send(EngineEvent::Failed(e.clone()));
                slot.done = true;
            }
        }
        slots.retain(|slot| {
            if slot.done || slot.job.events.is_closed() {
                let _ = ctx.clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                free.push(slot.seq);
                false
            } else {
                true
            }
        });
        active.store(slots.len(), Ordering::Relaxed);
    }
}

/// Decode one batch: the next token of each generating slot, then prompt chunks.
fn step(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    slots: &mut [Slot],
    config: &LocalLlamaConfig,
    model: &LlamaModel,
) -> Result<(), Error> {
    batch.clear();
    let capacity = config.settings.batch_size as usize;
    let add_err = |e: llama_cpp_2::llama_batch::BatchAddError| {
        Error::internal(format!("llama.cpp batch: {e}"))
    };
    for slot in slots.iter_mut() {
        slot.logits_at = None;
        if let Some(token) = slot.last {
            slot.logits_at = Some(batch.n_tokens());
            batch
                .add(token, slot.pos, &[slot.seq], true)
                .map_err(add_err)?;
            slot.pos += 1;
        }
    }
    for slot in slots.iter_mut() {
        if slot.last.is_some() || slot.next_prompt >= slot.job.prompt.len() {
            continue;
        }
        let room = capacity.saturating_sub(batch.n_tokens() as usize);
        if room == 0 {
            break;
        }
        let end = (slot.next_prompt + room).min(slot.job.prompt.len());
        for i in slot.next_prompt..end {
            let last = i + 1 == slot.job.prompt.len();
            if last {
                slot.logits_at = Some(batch.n_tokens());
            }
            batch
                .add(slot.job.prompt[i], slot.pos, &[slot.seq], last)
                .map_err(add_err)?;
            slot.pos += 1;
        }
        slot.next_prompt = end;
    }
    if batch.n_tokens() == 0 {
        return Ok(());
    }
    ctx.decode(batch)
        .map_err(|e| Error::internal(format!("llama.cpp decode failed: {e}")))?;
    let vocab = model.vocab();
    for slot in slots.iter_mut() {
        let Some(at) = slot.logits_at else { continue };
        let token = slot.sampler.sample(ctx, at);
        if vocab.is_eog(token) {
            finish(slot, StopReason::EndTurn);
            continue;
        }
        slot.generated += 1;
        if let Some(top) = slot.job.logprobs {
            let logprob = token_logprob(ctx, at, token, top, model);
            let _ = slot.job.events.send(EngineEvent::Logprob(logprob));
        }
        let piece = vocab.token_to_piece(token, false, None);
        let released = slot.text.push(&piece);
        if !released.text.is_empty()
            && slot
                .job
                .events
                .send(EngineEvent::Text(released.text))
                .is_err()
        {
            slot.done = true;
            continue;
        }
        if released.stopped {
            finish(slot, StopReason::StopSequence);
        } else if slot.generated >= slot.job.max_tokens {
            finish(slot, StopReason::MaxTokens);
        } else {
            slot.last = Some(token);
        }
    }
    Ok(())
}

fn finish(slot: &mut Slot, stop_reason: StopReason) {
    if stop_reason != StopReason::StopSequence {
        let rest = slot.text.finish();
        if !rest.is_empty() {
            let _ = slot.job.events.send(EngineEvent::Text(rest));
        }
    }
    let _ = slot.job.events.send(EngineEvent::Done {
        stop_reason,
        output_tokens: slot.generated,
    });
    slot.done = true;
}
