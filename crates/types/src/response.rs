//! Chat and embedding responses.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// Why generation stopped, with the Converse names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished its turn.
    EndTurn,
    /// The model wants a tool called.
    ToolUse,
    /// `maxTokens` was reached.
    MaxTokens,
    /// A stop sequence was produced.
    StopSequence,
    /// A guardrail intervened.
    GuardrailIntervened,
    /// Content was filtered.
    ContentFiltered,
    /// The model's context window is full.
    ModelContextWindowExceeded,
}

/// Token counts of one call, as in Converse `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
    /// Prompt tokens read from the provider's prompt cache (included in `input_tokens`'s
    /// accounting as the provider reports it; 0 when the provider reports none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_input_tokens: u32,
    /// Prompt tokens written to the provider's prompt cache (0 when none are reported).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_input_tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            cache_read_input_tokens: 0,
            cache_write_input_tokens: 0,
        }
    }

    /// The same usage with prompt-cache counts.
    pub fn with_cache(mut self, read: u32, write: u32) -> Self {
        self.cache_read_input_tokens = read;
        self.cache_write_input_tokens = write;
        self
    }
}

/// A complete chat answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The model that produced it.
    pub model: String,
    /// The assistant message.
    pub message: Message,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// Token counts.
    pub usage: Usage,
    /// Time spent in the model, in milliseconds.
    pub latency_ms: u64,
    /// Per-token log-probabilities of the text, when the request asked for them.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// One generated token with its log-probability (natural log, ≤ 0) and, when asked, the most
/// likely alternatives at that position, as OpenAI's `logprobs.content` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, most likely first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One alternative token at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// Embedding vectors, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    /// The model that produced them.
    pub model: String,
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read.
    pub input_tokens: u32,
}
